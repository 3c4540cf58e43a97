"""Device drivers behind one interface: simulated (sim/) and Bluetooth (CGMS/IDS)."""
