"""Source tree -> resized, cropped pixels -> shards; statistics with Dask; sample data."""
