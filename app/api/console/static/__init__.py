"""Static files of the web console (HTML, JS, CSS); no build step."""
