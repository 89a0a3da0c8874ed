"""Studio (publisher) sessions: the studio's peer connection and its tap into the relay."""
