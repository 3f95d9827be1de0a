"""Data plane: readers, canonical schemas, event-time windows, graph building, Kafka I/O."""
