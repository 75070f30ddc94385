"""HTTP clients for the two upstream APIs: Seamless.ai and AgentSEO."""
