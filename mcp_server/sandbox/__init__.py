"""The embedded sandbox: Starlette apps that imitate the Seamless.ai and AgentSEO APIs."""
