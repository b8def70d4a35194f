package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// baselineBody is what the baseline decodes: the union of the seed bodies' fields, with
// encoding/json, as a hand-written webhook handler would.
type baselineBody struct {
	CallbackCommand   string  `json:"callbackCommand"`
	OperationID       string  `json:"operationID"`
	GroupID           string  `json:"groupID"`
	UserID            string  `json:"userID"`
	GroupName         *string `json:"groupName"`
	Notification      *string `json:"notification"`
	Introduction      *string `json:"introduction"`
	FaceURL           *string `json:"faceURL"`
	Ex                *string `json:"ex"`
	NeedVerification  *int32  `json:"needVerification"`
	LookMemberInfo    *int32  `json:"lookMemberInfo"`
	ApplyMemberFriend *int32  `json:"applyMemberFriend"`
}

var baselineAnswer = []byte(`{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`)

// runBaselineServer is the bare limit: net/http, encoding/json, a fixed answer. It prints its
// address on stdout and serves until killed.
func runBaselineServer() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(lis.Addr().String())
	return http.Serve(lis, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b baselineBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(baselineAnswer)
	}))
}

// server is a process under test.
type server struct {
	cmd       *exec.Cmd
	httpAddr  string
	grpcAddr  string
	debugAddr string
}

// startBaseline runs this binary in baseline-server mode.
func startBaseline(pin bool) (*server, error) { return startSelf("baseline-server", pin) }

// startFloor runs this binary in floor-server mode (floor.go).
func startFloor(pin bool) (*server, error) { return startSelf("floor-server", pin) }

// startSelf runs this binary as a reference server in mode, which prints its HTTP address, and for
// the floor its gRPC address after it, on its first line.
func startSelf(mode string, pin bool) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, mode)
	cmd.Env = serverEnv(pin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	s := &server{cmd: cmd}
	addrs := strings.Fields(line)
	if len(addrs) > 0 {
		s.httpAddr = addrs[0]
	}
	if len(addrs) > 1 {
		s.grpcAddr = addrs[1]
	}
	if pin {
		if err := pinProcess(cmd.Process.Pid, serverCPU); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

var listenRE = regexp.MustCompile(`msg="(http|grpc|debug) listening" addr=(\S+)`)

// startBridge runs `imbridge serve` on loopback port 0 with a fresh data dir.
func startBridge(bin, dataDir string, pin, debug bool, extra ...string) (*server, error) {
	return startBridgeNice(0, bin, dataDir, pin, debug, extra...)
}

// startBridgeNice is startBridge at a lower CPU priority (nice(1)'s niceness; 0: as this process).
func startBridgeNice(niceness int, bin, dataDir string, pin, debug bool, extra ...string) (*server, error) {
	args := append([]string{"serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--log-level", "info"}, extra...)
	if debug {
		args = append(args, "--debug-addr", "127.0.0.1:0")
	}
	cmd := exec.Command(bin, args...)
	if niceness > 0 {
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(niceness), bin}, args...)...)
	}
	cmd.Env = serverEnv(pin)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd}
	found := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		sent := false
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				switch m[1] {
				case "debug":
					s.debugAddr = m[2]
				case "http":
					s.httpAddr = m[2]
				default:
					s.grpcAddr = m[2]
					sent = true
					found <- nil
				}
			} else if !strings.Contains(sc.Text(), "level=INFO") {
				fmt.Fprintln(os.Stderr, "bridge:", sc.Text())
			}
		}
		if !sent {
			found <- fmt.Errorf("bridge exited before listening")
		}
	}()
	select {
	case err := <-found:
		if err != nil {
			return nil, err
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("bridge did not start in 30s")
	}
	if pin {
		if err := pinProcess(cmd.Process.Pid, serverCPU); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, waitReady("http://" + s.httpAddr + "/readyz")
}

func waitReady(url string) error {
	for i := 0; i < 300; i++ {
		resp, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond) // polling a process we do not control; not a test
	}
	return fmt.Errorf("%s not ready", url)
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(unix.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// rss returns the process's resident set and its peak so far, in bytes.
func (s *server) rss() (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

// CPU layout for latency runs: the server on one core with GOMAXPROCS=1, the generator and
// subscribers on the other, so that run-queue contention does not stand in for the server's latency.
const (
	serverCPU = 0
	clientCPU = 1
)

func serverEnv(pin bool) []string {
	env := os.Environ()
	if pin {
		env = append(env, "GOMAXPROCS=1")
	}
	return env
}

// pinProcess sets the CPU affinity of every thread of pid (threads started later inherit it).
// It repeats until a pass finds no thread it had not pinned, since threads may appear meanwhile.
func pinProcess(pid, cpu int) error {
	var set unix.CPUSet
	set.Zero()
	set.Set(cpu)
	return setAffinity(pid, &set)
}

// pinSelf pins this process (generator and subscribers) to the client core for a latency run,
// and returns what undoes it.
func pinSelf() (undo func(), err error) {
	// Set this process's Ps explicitly, keeping their number, before pinning it: the Go runtime
	// would otherwise follow the affinity mask down to one P, which the open loop's pacer holds
	// with its locked thread while it sleeps. The readers, subscribers and deciders then waited
	// up to 3 ms (p99) to run, half of the end-to-end figure.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	if err := pinProcess(os.Getpid(), clientCPU); err != nil {
		return nil, err
	}
	return func() { _ = unpinSelf() }, nil
}

func unpinSelf() error {
	var set unix.CPUSet
	set.Zero()
	for i := 0; i < numCPU(); i++ {
		set.Set(i)
	}
	return setAffinity(os.Getpid(), &set)
}

func setAffinity(pid int, set *unix.CPUSet) error {
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		tids, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		if err != nil {
			return err
		}
		fresh := false
		for _, t := range tids {
			tid, _ := strconv.Atoi(filepath.Base(t))
			if done[tid] {
				continue
			}
			fresh = true
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pin thread %d: %w", tid, err)
			}
			done[tid] = true
		}
		if !fresh {
			return nil
		}
	}
	return nil
}

// cpuTime returns the CPU time (user and system) the process has used so far.
func (s *server) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces: utime and stime
	// are the 12th and 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
