"""Alembic migrations of a tiny example service, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, inspect, select

from services.runtime import migrations
from services.runtime.db import create_service_engine, normalise_database_url, schema_name

REVISIONS = {
    "0001_readings.py": '''
        """readings table"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0001"
        down_revision = None
        branch_labels = None
        depends_on = None

        def upgrade():
            op.create_table(
                "readings",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("patient_id", sa.String(64), nullable=False),
                sa.Column("glucose_mg_dl", sa.Integer, nullable=False),
                sa.UniqueConstraint("patient_id", "id", name="uq_readings_patient_id"),
            )

        def downgrade():
            op.drop_table("readings")
        ''',
    "0002_trend.py": '''
        """trend column and an index, one of them in raw SQL"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0002"
        down_revision = "0001"
        branch_labels = None
        depends_on = None

        def upgrade():
            op.add_column("readings", sa.Column("trend", sa.String(16), nullable=True))
            op.execute("CREATE INDEX ix_readings_patient ON readings (patient_id)")

        def downgrade():
            op.drop_index("ix_readings_patient", table_name="readings")
            op.drop_column("readings", "trend")
        ''',
}

BROKEN = '''
    """creates a table, then fails half-way"""
    import sqlalchemy as sa
    from alembic import op

    revision = "0003"
    down_revision = "0002"
    branch_labels = None
    depends_on = None

    def upgrade():
        op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
        op.execute("THIS IS NOT SQL")

    def downgrade():
        pass
    '''


@pytest.fixture
def versions_dir(tmp_path: Path) -> Path:
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, source in REVISIONS.items():
        (versions / name).write_text(textwrap.dedent(source))
    return versions


def tables(service: str, database_url: str) -> set[str]:
    """Tables of the service's own schema (PostgreSQL) or file (SQLite)."""
    engine = create_engine(normalise_database_url(database_url))
    try:
        schema = schema_name(service) if engine.dialect.name == "postgresql" else None
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema_and_is_idempotent(
    versions_dir: Path, database_url: str, unique_service: str
) -> None:
    assert migrations.current_revision(unique_service, database_url) is None
    assert migrations.upgrade(unique_service, versions_dir, database_url) == "0002"
    assert migrations.upgrade(unique_service, versions_dir, database_url) == "0002"
    assert migrations.current_revision(unique_service, database_url) == "0002"
    assert tables(unique_service, database_url) == {"readings", "alembic_version"}
    engine = create_engine(normalise_database_url(database_url))
    try:
        schema = schema_name(unique_service) if engine.dialect.name == "postgresql" else None
        columns = {c["name"] for c in inspect(engine).get_columns("readings", schema=schema)}
        if schema is not None:
            # the service's tables and its version table are in its schema, not in public
            public = set(inspect(engine).get_table_names(schema="public"))
            assert not {"readings", "alembic_version"} & public
    finally:
        engine.dispose()
    assert columns == {"id", "patient_id", "glucose_mg_dl", "trend"}


def test_step_by_step_and_back(versions_dir: Path, database_url: str, unique_service: str) -> None:
    assert migrations.upgrade(unique_service, versions_dir, database_url, revision="0001") == "0001"
    assert migrations.head_revision(unique_service, versions_dir) == "0002"
    assert migrations.upgrade(unique_service, versions_dir, database_url) == "0002"
    assert migrations.downgrade(unique_service, "base", versions_dir, database_url) is None
    assert tables(unique_service, database_url) == {"alembic_version"}


def test_failing_revision_changes_nothing(
    versions_dir: Path, database_url: str, unique_service: str
) -> None:
    migrations.upgrade(unique_service, versions_dir, database_url)
    (versions_dir / "0003_broken.py").write_text(textwrap.dedent(BROKEN))
    with pytest.raises(Exception, match="THIS IS NOT SQL"):
        migrations.upgrade(unique_service, versions_dir, database_url)
    assert migrations.current_revision(unique_service, database_url) == "0002"
    assert "half_done" not in tables(unique_service, database_url)


def test_concurrent_start_ups_migrate_once(
    versions_dir: Path, database_url: str, unique_service: str
) -> None:
    results: list[str | None] = []
    failures: list[BaseException] = []

    def start_up() -> None:
        try:
            results.append(migrations.upgrade(unique_service, versions_dir, database_url))
        except BaseException as error:
            failures.append(error)

    replicas = [threading.Thread(target=start_up) for _ in range(4)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(timeout=60)
    assert failures == []
    assert results == ["0002"] * 4
    engine = create_service_engine(unique_service, database_url)
    # a Table without schema, mapped onto the service's schema by the engine
    version_table = Table("alembic_version", MetaData(), Column("version_num", String(32)))
    try:
        with engine.connect() as connection:
            versions = connection.execute(select(version_table.c.version_num)).all()
    finally:
        engine.dispose()
    assert [row[0] for row in versions] == ["0002"]


def test_new_revision_writes_a_file_alembic_can_apply(
    tmp_path: Path, database_url: str, unique_service: str
) -> None:
    versions = tmp_path / "fresh" / "versions"
    path = migrations.new_revision(unique_service, "empty start", versions)
    assert path.parent == versions
    assert path.read_text().count("def upgrade() -> None:") == 1
    head = migrations.head_revision(unique_service, versions)
    assert head is not None
    assert migrations.upgrade(unique_service, versions, database_url) == head


def test_migrate_command_reports_a_service_without_migrations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert migrations.migrate_command("no-such-service") == 2
    assert "no migrations folder" in capsys.readouterr().err


def test_migrate_command_upgrades_the_configured_database(
    versions_dir: Path,
    database_url: str,
    unique_service: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(migrations, "default_versions_dir", lambda service: versions_dir)
    assert migrations.migrate_command(unique_service) == 0
    out = capsys.readouterr().out
    assert "revision 0002" in out
    assert ("PostgreSQL" if database_url.startswith("postgres") else "SQLite") in out
    assert migrations.current_revision(unique_service, database_url) == "0002"
