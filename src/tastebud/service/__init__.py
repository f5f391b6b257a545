"""The real-time HTTP service: storage of users, items and events, and the app that serves them."""
