"""Joining an env host to a Ray head over one SSH connection: port plan, ssh, supervisor, head and worker sides."""
