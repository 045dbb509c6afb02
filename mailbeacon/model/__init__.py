"""Values every layer shares, with no I/O: ids, the clock, addresses, tags, tokens, hits,
paging, spreadsheets."""
