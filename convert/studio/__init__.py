"""The studio (issue 14): projects kept as plain folders that the browser pages and the CLI share."""
