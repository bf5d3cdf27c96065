"""HTTP routers, one per API dialect. Each is thin: it binds paths to the dialect's methods and adds auth."""
