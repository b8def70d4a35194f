package eventlog

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestDataDirLock: a second log on a data dir in use fails at once, naming the dir and the pid of
// the process holding it; once the first closes, the dir can be opened again.
func TestDataDirLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	first, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Options{DataDir: dir})
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second open: %v; want ErrDataDirInUse naming %s and pid %d", err, dir, os.Getpid())
	}
	if err := first.Ready(ctx); err != nil {
		t.Errorf("first log after the second open: %v", err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	again.Close(ctx)
}
