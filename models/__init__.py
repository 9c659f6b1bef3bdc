"""The gridsched domain as data: devices, sites, tariffs, markets, signals, economics."""
