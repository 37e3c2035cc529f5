//go:build linux

package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The files `clusterd tls init` writes into its directory that the lab
// uses.
const (
	caFile             = "ca.pem"
	gossipKeyFile      = "gossip.key"
	bootstrapTokenFile = "bootstrap-token"
)

// TLSInit runs `clusterd tls init` into dir for the directors ids, as an
// operator sets up a cluster, with each director's lab address as an IP
// SAN next to the names tls init always writes: clusterctl verifies the
// name director.directorate by default, but a client that checks the
// address it dials must find it too.
func TLSInit(bin, dir string, ids []string, addrs map[string]netip.Addr) error {
	argv := []string{"tls", "init", "-dir", dir, "-nodes", strings.Join(ids, ",")}
	for _, id := range ids {
		if a, ok := addrs[id]; ok {
			argv = append(argv, "-ip", id+"="+a.String())
		}
	}
	out, err := exec.Command(filepath.Join(bin, "clusterd"), argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("clusterd tls init -dir %s: %w: %s", dir, err, out)
	}
	return nil
}

// securityConfig is the block `clusterd tls init` prints for director id
// whose files are in pki.
func securityConfig(pki, id string) string {
	return fmt.Sprintf("tls:\n  ca: %s\n  cert: %s\n  key: %s\ngossip_key_file: %s\nbootstrap_token_file: %s\n",
		filepath.Join(pki, caFile), filepath.Join(pki, id+".pem"), filepath.Join(pki, id+"-key.pem"),
		filepath.Join(pki, gossipKeyFile), filepath.Join(pki, bootstrapTokenFile))
}

// Credentials are what clusterctl authenticates with: the CA it verifies
// the director against, and an API token. The zero Token means none: the
// request goes out unauthenticated.
type Credentials struct {
	CA    string
	Token string
	// TokenFile, if set, is passed instead of Token.
	TokenFile string
}

// env is c as clusterctl's environment, on top of the lab's own
// environment without any DIRECTORATE_ variable, so that nothing the
// caller did not ask for authenticates the request.
func (c Credentials) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DIRECTORATE_") || strings.HasPrefix(kv, "DIRECTORATE_IN_VM=") {
			env = append(env, kv)
		}
	}
	if c.CA != "" {
		env = append(env, "DIRECTORATE_CA="+c.CA)
	}
	switch {
	case c.TokenFile != "":
		env = append(env, "DIRECTORATE_TOKEN_FILE="+c.TokenFile)
	case c.Token != "":
		env = append(env, "DIRECTORATE_TOKEN="+c.Token)
	}
	return env
}

// operatorCredentials are the bootstrap operator token of the tls init
// directory pki, which every lab director adds if the cluster has no
// token.
func operatorCredentials(pki string) Credentials {
	return Credentials{CA: filepath.Join(pki, caFile), TokenFile: filepath.Join(pki, bootstrapTokenFile)}
}
