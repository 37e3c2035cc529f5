package api

// WithMaxResponseBytes lowers the response bound so a test need not send
// the real limit's 65 MiB.
func WithMaxResponseBytes(n int64) Option {
	return func(c *Client) error {
		c.maxResponse = n
		return nil
	}
}
