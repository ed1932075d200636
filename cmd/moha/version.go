package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/buildinfo"
)

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the build: module version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(stdout, buildinfo.Get())
			return err
		},
	}
}
