"""The FastAPI ingress app: routes, uploads, errors. Built on each Ingress replica."""
