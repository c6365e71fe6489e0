"""What the test modules share: builders, recorders, clocks and waits, each module named
for what it holds. Test modules import from here (and take fixtures from conftest.py),
never from one another."""
