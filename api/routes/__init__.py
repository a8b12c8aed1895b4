"""HTTP routes, one module per resource; each route validates, calls search.*, returns a schema."""
