package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// lockFile is the file in the data dir that an embedded log holds locked while it runs.
const lockFile = "imbridge.lock"

// ErrDataDirInUse is returned by Open when another process holds the data dir.
var ErrDataDirInUse = errors.New("data dir in use")

// lockDataDir creates the data dir if needed and takes its lock for this process, before anything
// else touches the dir. Two processes on one store lose acknowledged events: each writes sequences
// the other also writes, and each rebuilds state the other is changing. The lock is an flock on
// lockFile, which the kernel releases when the process dies however it dies; the file holds the pid
// of the process holding it, for the error the next one gets.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			abs, _ := filepath.Abs(dir)
			return nil, fmt.Errorf("%w: %s is held by imbridge process %s; one process per data dir", ErrDataDirInUse, abs, pidOf(holder))
		}
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	return f, nil
}

func pidOf(b []byte) string {
	if pid := string(bytes.TrimSpace(b)); pid != "" {
		return pid
	}
	return "(pid unknown)"
}

// unlock releases the data dir (closing the file releases the flock).
func (l *Log) unlock() {
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
}
