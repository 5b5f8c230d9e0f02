"""Case data shared by tests: HealthPolicy specs, forged journals and a frozen reader of old journals."""
