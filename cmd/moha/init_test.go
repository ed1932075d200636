package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moha-project/moha/internal/config"
)

// TestInit: moha init writes a cluster file that loads and renders, and a
// fresh secret file with mode 0600 that a second run keeps as it is.
func TestInit(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "moha.secret")
	args := []string{"init", "--nodes", "10.0.0.11,10.0.0.12,10.0.0.13", "--lbs", "10.0.0.2,10.0.0.3",
		"--floating-ip", "10.0.0.100/24", "--interface", "ens3", "--secret-file", secret}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("moha init: %v\n%s", err, errOut.String())
	}
	st, err := os.Stat(secret)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() < 32 {
		t.Fatalf("secret file: %v, mode %v, %d bytes", err, st.Mode(), st.Size())
	}
	first, _ := os.ReadFile(secret)
	clusterFile := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(clusterFile, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(clusterFile); err != nil {
		t.Fatalf("the written cluster file does not load: %v\n%s", err, out.String())
	}
	if rendered, err := renderCLI(t, "haproxy", "--cluster", clusterFile); err != nil || !strings.Contains(rendered, "server node3 10.0.0.13:1883") {
		t.Fatalf("render haproxy from it: %v\n%s", err, rendered)
	}

	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(secret); !bytes.Equal(again, first) || !strings.Contains(errOut.String(), "kept the existing secret file") {
		t.Fatalf("the secret file was overwritten, or not said to be kept: %s", errOut.String())
	}

	if err := run(context.Background(), []string{"init", "--lbs", "10.0.0.2"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no nodes") {
		t.Fatalf("init without nodes: %v", err)
	}
}
