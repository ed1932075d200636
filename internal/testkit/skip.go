package testkit

import (
	"fmt"
	"os"
	"testing"
)

// RequireEnv is the environment variable that turns a missing tool or
// privilege into a test failure: CI sets it (.ci/run), so that a test
// cannot pass there by skipping.
const RequireEnv = "MOHA_TEST_REQUIRE"

// SkipUnavailable skips the test for a missing tool or privilege, or fails
// it when RequireEnv is set.
func SkipUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%s (%s is set: nothing may be skipped)", why, RequireEnv)
	}
	t.Skip(why)
}
