package testkit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	mohaOnce sync.Once
	mohaPath string
	mohaErr  error
)

// MohaBinary builds cmd/moha once per test process and returns its path,
// for tests that run agents as child processes (signals, processes apart).
func MohaBinary(t testing.TB) string {
	t.Helper()
	mohaOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			mohaErr = err
			return
		}
		dir, err := os.MkdirTemp("", "moha-test-bin-")
		if err != nil {
			mohaErr = err
			return
		}
		mohaPath = filepath.Join(dir, "moha")
		cmd := exec.Command("go", "build", "-o", mohaPath, "./cmd/moha")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			mohaErr = errors.New(string(out))
		}
	})
	if mohaErr != nil {
		t.Fatalf("build moha: %v", mohaErr)
	}
	return mohaPath
}

// RemoveMohaBinary deletes what MohaBinary built; call it from TestMain
// after the tests ran.
func RemoveMohaBinary() {
	if mohaPath != "" {
		_ = os.RemoveAll(filepath.Dir(mohaPath))
	}
}
