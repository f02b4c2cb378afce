"""Task layer: submission, the task runner, webhooks, task views."""
