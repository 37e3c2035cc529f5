package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/directorate/directorate/api"
)

// credentials are how clusterctl proves who it is and checks whom it talks
// to: the cluster CA, an optional client certificate, and an API token.
type credentials struct {
	ca, cert, key    string
	token, tokenFile string
	serverName       string
}

// addCredentialFlags registers --ca, --cert, --key, --token, --token-file
// and --tls-server-name, each defaulting to its environment variable.
func (a *app) addCredentialFlags(pf *pflag.FlagSet) {
	env := a.env.Getenv
	c := &a.creds
	pf.StringVar(&c.ca, "ca", env(api.EnvCA), "cluster CA `file` (PEM) to verify the director with; turns on HTTPS; $"+api.EnvCA+" sets the default")
	pf.StringVar(&c.cert, "cert", env(api.EnvCert), "client certificate `file` (PEM) from the cluster CA, for token bootstrap; $"+api.EnvCert)
	pf.StringVar(&c.key, "key", env(api.EnvKey), "private key `file` of --cert; $"+api.EnvKey)
	pf.StringVar(&c.token, "token", "", "API token ID.SECRET; prefer $"+api.EnvToken+" or --token-file, which ps does not show")
	pf.StringVar(&c.tokenFile, "token-file", "", "`file` holding the API token; $"+api.EnvTokenFile+" sets the default")
	pf.StringVar(&c.serverName, "tls-server-name", api.DirectorServerName,
		"name the director's certificate must carry (empty: the --addr host)")
}

// options turns the credentials into client options, and addr into an
// https URL when TLS is configured and addr has no scheme.
func (c *credentials) options(addr string) ([]api.Option, string, error) {
	var opts []api.Option
	tok, err := c.resolveToken()
	if err != nil {
		return nil, "", err
	}
	if tok != "" {
		opts = append(opts, api.WithToken(tok))
	}
	if (c.cert == "") != (c.key == "") {
		return nil, "", usagef("--cert and --key: give both or neither")
	}
	if c.ca == "" && c.cert == "" {
		return opts, addr, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.serverName}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, "", usagef("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", usagef("--ca: %s holds no PEM certificate", c.ca)
		}
		cfg.RootCAs = pool
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, "", usagef("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if strings.HasPrefix(addr, "http://") {
		return nil, "", usagef("--addr %s is plain HTTP, but --ca or --cert asks for TLS: use https:// or host:port", addr)
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	return append(opts, api.WithTLSConfig(cfg)), addr, nil
}

// resolveToken picks --token or --token-file, then (withEnvToken)
// $DIRECTORATE_TOKEN_FILE, then $DIRECTORATE_TOKEN.
func (c *credentials) resolveToken() (string, error) {
	if c.token != "" && c.tokenFile != "" {
		return "", usagef("--token and --token-file: give one or the other")
	}
	if c.token != "" {
		return c.token, nil
	}
	if c.tokenFile != "" {
		raw, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", usagef("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(raw))
		if tok == "" {
			return "", usagef("--token-file: %s is empty", c.tokenFile)
		}
		return tok, nil
	}
	return "", nil
}

// withEnvToken fills the token from the environment when neither flag
// gave one, so a flag always wins over the environment. It is a separate
// step so --token's help does not print the secret as its default.
func (c *credentials) withEnvToken(getenv func(string) string) {
	if c.token != "" || c.tokenFile != "" {
		return
	}
	if c.tokenFile = getenv(api.EnvTokenFile); c.tokenFile == "" {
		c.token = getenv(api.EnvToken)
	}
}
