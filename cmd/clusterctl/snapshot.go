package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the whole configuration to a file, or restore it from one",
	}
	cmd.AddCommand(a.snapshotSaveCmd(), a.snapshotRestoreCmd())
	return group(cmd)
}

func (a *app) snapshotSaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save the whole configuration as JSON ('-' writes to stdout)",
		Long: `Save the whole replicated configuration (VIPs, services, real servers,
with the index it was taken at) as JSON. The file is written whole or not
at all. '-' writes to stdout.`,
		Args: exactArgs("FILE"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			file := args[0]
			c, err := a.reader()
			if err != nil {
				return err
			}
			// The raw answer is saved, so fields a newer clusterd added survive.
			raw, index, err := c.SnapshotJSON(cmd.Context())
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if err := json.Indent(&out, raw, "", "  "); err != nil {
				return fmt.Errorf("snapshot from clusterd is not valid JSON: %w", err)
			}
			out.WriteByte('\n')
			if file == "-" {
				_, err := a.stdout.Write(out.Bytes())
				return err
			}
			if err := writeFileAtomic(file, out.Bytes()); err != nil {
				return err
			}
			var st fsm.State
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("saved %s, but cannot read it back: %w", file, err)
			}
			return a.wrote(index, "saved snapshot of %s to %s", stateSummary(st), file)
		}),
	}
}

// writeFileAtomic replaces path with data, so an interrupted save leaves
// the previous file rather than half a snapshot.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save snapshot to %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save snapshot to %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save snapshot to %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save snapshot to %s: %w", path, err)
	}
	return nil
}

func (a *app) snapshotRestoreCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole configuration with a saved snapshot",
		Long: `Replace the whole replicated configuration with one saved by 'snapshot
save': every VIP, service and real server not in FILE is removed. clusterd
validates the snapshot as a whole and applies it as one change.

clusterctl asks for confirmation on the terminal; --yes skips the question,
and is required when stdin is not a terminal or FILE is '-' (stdin).`,
		Args: exactArgs("FILE"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if file == "-" && !yes {
				return usagef("reading the snapshot from stdin leaves no way to confirm the restore: pass --yes")
			}
			state, err := a.readState(file)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			summary := stateSummary(state)
			if !yes {
				if !a.env.StdinIsTerminal {
					return usagef("snapshot restore replaces the whole configuration, and stdin is not a terminal to confirm it: pass --yes")
				}
				fmt.Fprintf(a.stderr, "This replaces the whole configuration of the cluster at %s with %s from %s (taken at index %d).\nType yes to continue: ",
					c.BaseURL(), summary, file, state.Index)
				answer, err := bufio.NewReader(a.env.Stdin).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("read confirmation: %w", err)
				}
				if ans := strings.ToLower(strings.TrimSpace(answer)); ans != "yes" && ans != "y" {
					return errors.New("restore cancelled; the configuration is unchanged")
				}
			}
			index, err := c.Restore(cmd.Context(), state)
			if err != nil {
				return err
			}
			return a.wrote(index, "restored %s from %s", summary, file)
		}),
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// readState reads and strictly decodes a snapshot file, so a typo in a
// hand-edited file is reported with its position instead of dropped.
func (a *app) readState(file string) (fsm.State, error) {
	var r io.Reader
	if file == "-" {
		r = a.env.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return fsm.State{}, fmt.Errorf("read snapshot: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, api.MaxBodyBytes+1))
	if err != nil {
		return fsm.State{}, fmt.Errorf("read snapshot %s: %w", file, err)
	}
	if len(data) > api.MaxBodyBytes {
		return fsm.State{}, fmt.Errorf("snapshot %s is larger than the API's limit of %d bytes", file, api.MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st fsm.State
	if err := dec.Decode(&st); err != nil {
		return fsm.State{}, fmt.Errorf("snapshot %s: %s", file, describeJSONError(data, err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fsm.State{}, fmt.Errorf("snapshot %s: unexpected data after the JSON object at line %d", file, lineOf(data, dec.InputOffset()))
	}
	return st, nil
}

func describeJSONError(data []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("line %d: %v", lineOf(data, se.Offset), se)
	case errors.As(err, &te):
		return fmt.Sprintf("line %d: %s: cannot use a JSON %s as %s", lineOf(data, te.Offset), te.Field, te.Value, te.Type)
	case errors.Is(err, io.EOF):
		return "empty file"
	}
	return err.Error()
}

func lineOf(data []byte, offset int64) int {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	return bytes.Count(data[:offset], []byte("\n")) + 1
}

func stateSummary(st fsm.State) string {
	servers := 0
	for _, s := range st.Services {
		if s != nil {
			servers += len(s.Servers)
		}
	}
	return fmt.Sprintf("%s, %s and %s",
		plural(len(st.VIPs), "VIP"), plural(len(st.Services), "service"), plural(servers, "real server"))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
