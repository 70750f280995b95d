"""Joining an env host to a Ray head over one SSH connection (port plan; the supervisor is to come)."""
