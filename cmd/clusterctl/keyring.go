package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

func (a *app) keyringCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "Rotate the gossip encryption keys",
		Long: `Manage the keys memberlist gossip is encrypted with (AES-256-GCM, 32-byte keys).

Rotate without a membership flap in three steps, each committed on every
director before the next:
  clusterctl keyring install --key-file new.key   # every director accepts it
  clusterctl keyring use FINGERPRINT              # every director sends with it
  clusterctl keyring remove OLD-FINGERPRINT       # nobody accepts the old one
'keyring ls' shows fingerprints, never keys, and which directors announce each key.`,
	}
	cmd.AddCommand(a.keyringGenerateCmd(), a.keyringInstallCmd(), a.keyringUseCmd(), a.keyringRemoveCmd(), a.keyringLsCmd())
	return group(cmd)
}

func (a *app) keyringGenerateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "generate",
		Short: "Print a new random gossip key (base64 of 32 bytes); nothing is sent",
		Args:  exactArgs(),
		RunE: action(func(_ *cobra.Command, _ []string) error {
			key := make([]byte, fsm.GossipKeyLen)
			if _, err := rand.Read(key); err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			_, err := fmt.Fprintln(a.stdout, base64.StdEncoding.EncodeToString(key))
			return err
		}),
	}
}

// parseKey decodes a base64 gossip key.
func parseKey(what, s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(key) != fsm.GossipKeyLen {
		return nil, usagef("%s: want the base64 of %d bytes, as 'clusterctl keyring generate' prints", what, fsm.GossipKeyLen)
	}
	return key, nil
}

func (a *app) keyringInstallCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "install [KEY]",
		Short: "Install a gossip key on every director, without sending with it yet",
		Long: `Install a gossip key (base64 of 32 bytes). Prefer --key-file: a key on the
command line lands in the shell history and in ps.`,
		Args: cobra.MaximumNArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			var raw string
			switch {
			case len(args) == 1 && keyFile != "":
				return usagef("give KEY or --key-file, not both")
			case len(args) == 1:
				raw = args[0]
			case keyFile != "":
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return usagef("--key-file: %v", err)
				}
				raw = string(b)
			default:
				return usagef("give the key as --key-file FILE (or KEY); 'clusterctl keyring generate' makes one")
			}
			key, err := parseKey("KEY", raw)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.InstallKey(cmd.Context(), key)
			if err != nil {
				return err
			}
			return a.wrote(index, "installed gossip key %s; once 'clusterctl keyring ls' shows it on every director: clusterctl keyring use %s",
				fsm.KeyFingerprint(key), fsm.KeyFingerprint(key))
		}),
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "read the key from this `file`")
	return cmd
}

// fingerprintArg accepts a fingerprint as 'keyring ls' prints it, or the
// key itself, whose fingerprint is computed here so the key is not sent.
func fingerprintArg(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 16 {
		if _, err := hex.DecodeString(s); err == nil {
			return strings.ToLower(s), nil
		}
	}
	if key, err := parseKey("KEY", s); err == nil {
		return fsm.KeyFingerprint(key), nil
	}
	return "", usagef("%q is neither a key fingerprint (16 hex digits, as 'clusterctl keyring ls' shows) nor a key", s)
}

func (a *app) keyringUseCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "use FINGERPRINT",
		Short: "Make an installed key the one every director encrypts gossip with",
		Long: `Make an installed key the primary. It is refused while a live director does
not announce the key yet (it could not decrypt gossip); --force skips that check.`,
		Args: exactArgs("FINGERPRINT"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			fp, err := fingerprintArg(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.UseKey(cmd.Context(), fp, force)
			if err != nil {
				return err
			}
			return a.wrote(index, "gossip is now encrypted with key %s", fp)
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "use the key even if a live director does not announce it")
	return cmd
}

func (a *app) keyringRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "remove FINGERPRINT",
		Aliases: []string{"rm"},
		Short:   "Remove a gossip key that is not the primary",
		Args:    exactArgs("FINGERPRINT"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			fp, err := fingerprintArg(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.RemoveKey(cmd.Context(), fp)
			if err != nil {
				return err
			}
			return a.wrote(index, "removed gossip key %s", fp)
		}),
	}
}

func (a *app) keyringLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the gossip keys by fingerprint, and which directors announce each",
		Args:    exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			st, index, err := c.Keyring(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(index, st)
			}
			return writeKeyring(a, st)
		}),
	}
}

func writeKeyring(a *app, st api.KeyringStatus) error {
	if st.Insecure {
		_, err := fmt.Fprintln(a.stdout, "gossip is not encrypted (insecure: true): there is no keyring")
		return err
	}
	if !st.Replicated {
		if _, err := fmt.Fprintln(a.stdout, "no key installed yet: directors use their gossip_key_file; this director's key:"); err != nil {
			return err
		}
	}
	t := newTable("FINGERPRINT", "PRIMARY", "INSTALLED ON", "MISSING ON")
	for _, k := range st.Keys {
		primary := ""
		if k.Primary {
			primary = "yes"
		}
		t.row(k.Fingerprint, dash(primary), dash(strings.Join(k.InstalledOn, ",")), dash(strings.Join(k.MissingOn, ",")))
	}
	if err := t.write(a.stdout); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	m := newTable("DIRECTOR", "GOSSIP", "ANNOUNCED KEYS (PRIMARY FIRST)")
	for _, d := range st.Members {
		m.row(d.ID, d.State, dash(strings.Join(d.Keys, ",")))
	}
	return m.write(a.stdout)
}
