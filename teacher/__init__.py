"""The Instant-NGP teacher: hash-grid NeRF with an occupancy grid and volume rendering."""
