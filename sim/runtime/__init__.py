"""The process runtime: the engine that starts actors, and what runs inside each actor."""
