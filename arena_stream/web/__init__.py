"""What a worker serves over HTTP beside the stream: the live leaderboard page."""
