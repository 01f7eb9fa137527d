"""Test support: throw-away RabbitMQ nodes and clusters on loopback."""
