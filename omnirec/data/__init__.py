"""Data in: readers, cleaning, id maps, splits and the synthetic catalogue."""
