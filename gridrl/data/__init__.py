"""Site signals: sources, loaders, validation and units."""
