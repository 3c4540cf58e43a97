"""Plain Python/NumPy twins of the compiled kernels, for differential tests and speed comparison.

Each function mirrors its compiled counterpart operation by operation, so the two agree to
rounding (the tests hold them within 1e-9).
"""
