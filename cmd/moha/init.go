package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/config"
)

func newInitCommand(stdout, stderr io.Writer) *cobra.Command {
	var o config.ScaffoldOptions
	cmd := &cobra.Command{
		Use:   "init --nodes HOST,HOST,... [--lbs HOST,HOST --floating-ip CIDR --interface IF] > cluster.yaml",
		Short: "Write a commented cluster file (and a fresh secret file) from a list of hosts",
		Long: `Write a valid, commented cluster file for the given hosts to standard output,
and a fresh random secret (mode 0600) to --secret-file unless that file exists
(an existing secret file is kept, never overwritten).

Node i is node<i>: its broker on <host>:1883, its agent's link on <host>:7946
and its HTTP on <host>:9101. Load balancer i is lb<i>; the first is preferred.
Every field of the file: docs/CONFIG.md.

Example:
  moha init --nodes 10.0.0.11,10.0.0.12,10.0.0.13 --lbs 10.0.0.2,10.0.0.3 \
    --floating-ip 10.0.0.100/24 --interface ens3 > cluster.yaml`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			text, err := config.Scaffold(o)
			if err != nil {
				return err
			}
			created, err := writeSecretFile(o.SecretFile)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(stderr, "wrote a fresh secret to %s (mode 0600): copy it to every node beside the cluster file\n", o.SecretFile)
			} else {
				fmt.Fprintf(stderr, "kept the existing secret file %s\n", o.SecretFile)
			}
			_, err = io.WriteString(stdout, text)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&o.Nodes, "nodes", nil, "the broker hosts, one per node (IP or DNS name, optionally :port)")
	fl.StringSliceVar(&o.LBs, "lbs", nil, "the load balancer hosts (HAProxy + keepalived)")
	fl.StringVar(&o.FloatingIP, "floating-ip", "", "the floating IP the load balancers share, as CIDR (required with --lbs)")
	fl.StringVar(&o.Interface, "interface", "", "the load balancers' VRRP interface (default eth0)")
	fl.StringVar(&o.Name, "name", "", "the cluster's name (default moha)")
	fl.StringVar(&o.SecretFile, "secret-file", "moha.secret", "the secret file, relative to where the cluster file will be")
	return cmd
}

// writeSecretFile creates path with 32 random bytes (base64) and mode
// 0600, unless it exists: then it is kept.
func writeSecretFile(path string) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("secret file: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		f.Close()
		return false, fmt.Errorf("secret file: %w", err)
	}
	if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(secret)); err != nil {
		f.Close()
		return false, fmt.Errorf("secret file: %w", err)
	}
	return true, f.Close()
}
