"""What stands in for something real in the tests and the benchmark: Pulumi's engine, the providers,
PostgreSQL, Docker Engines, images, hosts and cloud APIs. Depends on lib/ only."""
