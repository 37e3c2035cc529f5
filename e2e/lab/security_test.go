//go:build linux

package lab

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestConfigRendersSecurity(t *testing.T) {
	o := DirectorOptions{PKI: "/lab/pki", BootstrapExpect: 3}
	cfg := o.Config("d2", "/lab/d2", netip.MustParseAddr("10.0.0.2"), []string{"10.0.0.1:7002"})
	for _, want := range []string{
		"tls:\n  ca: /lab/pki/ca.pem\n  cert: /lab/pki/d2.pem\n  key: /lab/pki/d2-key.pem\n",
		"gossip_key_file: /lab/pki/gossip.key\n",
		"bootstrap_token_file: /lab/pki/bootstrap-token\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "insecure") {
		t.Errorf("config mentions insecure:\n%s", cfg)
	}
}

func TestCredentialsEnv(t *testing.T) {
	t.Setenv("DIRECTORATE_TOKEN", "leaked.from-the-environment")
	t.Setenv("DIRECTORATE_IN_VM", "1")
	for _, tc := range []struct {
		name string
		c    Credentials
		want []string
	}{
		{"none", Credentials{CA: "/p/ca.pem"}, []string{"DIRECTORATE_CA=/p/ca.pem"}},
		{"token", Credentials{CA: "/p/ca.pem", Token: "a.b"}, []string{"DIRECTORATE_CA=/p/ca.pem", "DIRECTORATE_TOKEN=a.b"}},
		{"file wins", Credentials{CA: "/p/ca.pem", Token: "a.b", TokenFile: "/p/t"}, []string{"DIRECTORATE_CA=/p/ca.pem", "DIRECTORATE_TOKEN_FILE=/p/t"}},
	} {
		var got []string
		for _, kv := range tc.c.env() {
			if strings.HasPrefix(kv, "DIRECTORATE_") && kv != "DIRECTORATE_IN_VM=1" {
				got = append(got, kv)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: DIRECTORATE_ environment %v, want %v", tc.name, got, tc.want)
		}
	}
}
