"""Cluster suite: quorum queues on a 3-node RabbitMQ cluster of its own."""
