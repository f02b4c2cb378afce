"""Ray Serve deployments: Transcriber, Summarizer and the HTTP Ingress, composed with handles."""
