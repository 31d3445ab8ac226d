"""The distributor ring: which replicas of the service are alive, for the global ingestion rate strategy."""
