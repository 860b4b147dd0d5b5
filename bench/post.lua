-- wrk script for the http-post scenario: a small JSON POST, as an API client sends.
wrk.method = "POST"
wrk.body   = '{"name":"widget","qty":12}'
wrk.headers["Content-Type"] = "application/json"
