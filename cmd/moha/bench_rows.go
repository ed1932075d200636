package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
)

// agentBinary is this executable: the bench commands run their agents as
// child processes of it.
func agentBinary() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary for the agents: %w", err)
	}
	return self, nil
}

// printRows writes a bench command's rows as indented JSON or as its table.
func printRows[R any](w io.Writer, asJSON bool, rows R, table func(io.Writer, R) error) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	return table(w, rows)
}

// benchOutput is where a scale bench (interest, window, storm, rejoin)
// reports: progress lines on stderr unless --quiet, the result on stdout
// as a table or, with --json, as JSON.
type benchOutput struct {
	stdout, stderr io.Writer
	asJSON, quiet  bool
}

// flags adds --json and --quiet.
func (o *benchOutput) flags(f *pflag.FlagSet) {
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&o.quiet, "quiet", false, "no progress lines")
}

// progress is where progress lines go: nil with --quiet.
func (o *benchOutput) progress() io.Writer {
	if o.quiet {
		return nil
	}
	return o.stderr
}

// runBench runs measure with this executable as the agents' binary and
// prints what it measured with table (or as JSON).
func runBench[R any](ctx context.Context, o *benchOutput, measure func(ctx context.Context, self string, progress io.Writer) (R, error), table func(io.Writer, R) error) error {
	self, err := agentBinary()
	if err != nil {
		return err
	}
	rows, err := measure(ctx, self, o.progress())
	if err != nil {
		return err
	}
	return printRows(o.stdout, o.asJSON, rows, table)
}
