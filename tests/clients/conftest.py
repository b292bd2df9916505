"""Wire tests of the upstream clients, with respx standing in for the upstreams."""
