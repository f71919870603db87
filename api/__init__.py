"""The HTTP front: starts and steers the customers' workflows, turns webhooks into signals."""
