package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
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
