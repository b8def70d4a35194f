package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/examples"
)

func send(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("send", "[flags] FILE|NAME\n\nNAME is a built-in example: "+strings.Join(examples.Names(), ", "))
	base := fs.String("url", "http://localhost:8080", "bridge HTTP base URL")
	vendor := fs.String("vendor", "", "openim or tencent (for a FILE; default: guessed from the body)")
	command := fs.String("command", "", "callback command (for a FILE; default: the body's callbackCommand/CallbackCommand)")
	sdkAppID := fs.String("sdkappid", "1400000000", "Tencent SdkAppid query parameter")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the answer")
	pathSecret := fs.String("path-secret", "", "OpenIM path secret: post to /openim/<secret>/{command} (Basic credentials go in --url: http://user:password@host:8080)")
	tencentToken := fs.String("tencent-token", "", "Tencent app token: sign the callback (RequestTime, Sign) as Tencent does")
	ca := fs.String("ca", "", "PEM CA certificate to trust for an https --url (default: the system's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("send takes one FILE or example NAME")
	}
	ex, err := loadCallback(fs.Arg(0), examples.Vendor(*vendor), *command)
	if err != nil {
		return err
	}
	target, err := callbackURL(*base, ex, *sdkAppID, *pathSecret, *tencentToken, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(ex.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if ex.Vendor == examples.OpenIM {
		req.Header.Set("operationID", nuid.Next())
	}
	client := http.DefaultClient
	if *ca != "" {
		tc, err := clientTLS(*ca)
		if err != nil {
			return err
		}
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	shown := target // without the secrets it may hold
	if u, err := url.Parse(target); err == nil {
		if *pathSecret != "" {
			u.Path = strings.Replace(u.Path, "/"+*pathSecret+"/", "/xxxxx/", 1)
		}
		if q := u.Query(); q.Has("Sign") {
			q.Set("Sign", "xxxxx")
			u.RawQuery = q.Encode()
		}
		shown = u.Redacted()
	}
	fmt.Fprintf(out, "POST %s\n%s\n%s\n", shown, resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bridge answered %s", resp.Status)
	}
	return nil
}

// loadCallback reads an example by name, or a file whose vendor and command are given or read from it.
func loadCallback(arg string, vendor examples.Vendor, command string) (examples.Example, error) {
	if _, statErr := os.Stat(arg); statErr != nil {
		if ex, err := examples.Get(arg); err == nil {
			return ex, nil
		}
		return examples.Example{}, fmt.Errorf("%s is neither a file nor an example (%s)", arg, strings.Join(examples.Names(), ", "))
	}
	body, err := os.ReadFile(arg)
	if err != nil {
		return examples.Example{}, err
	}
	var head struct {
		OpenIM  string `json:"callbackCommand"`
		Tencent string `json:"CallbackCommand"`
	}
	_ = json.Unmarshal(body, &head) // a broken body is still sent: the bridge's answer says what is wrong
	if vendor == "" {
		vendor = examples.OpenIM
		if head.Tencent != "" && head.OpenIM == "" || strings.Contains(command, ".") {
			vendor = examples.Tencent
		}
	}
	if command == "" {
		command = head.OpenIM
		if vendor == examples.Tencent {
			command = head.Tencent
		}
	}
	if command == "" {
		return examples.Example{}, fmt.Errorf("%s: no command in the body; give --command", arg)
	}
	if vendor != examples.OpenIM && vendor != examples.Tencent {
		return examples.Example{}, fmt.Errorf("vendor %q: want openim or tencent", vendor)
	}
	return examples.Example{Name: arg, Vendor: vendor, Command: command, Body: body}, nil
}

// callbackURL is where the IM server would post: OpenIM {url}/openim/{command}, Tencent one URL with
// the command and request facts in the query string.
func callbackURL(base string, ex examples.Example, sdkAppID, pathSecret, tencentToken string, now time.Time) (string, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	if ex.Vendor == examples.OpenIM {
		u.Path += "/openim/"
		if pathSecret != "" {
			u.Path += pathSecret + "/"
		}
		u.Path += ex.Command
		return u.String(), nil
	}
	u.Path += "/tencent"
	q := url.Values{}
	q.Set("SdkAppid", sdkAppID)
	q.Set("CallbackCommand", ex.Command)
	q.Set("contenttype", "json")
	q.Set("ClientIP", "127.0.0.1")
	q.Set("OptPlatform", "RESTAPI")
	q.Set("RequestID", nuid.Next())
	if tencentToken != "" {
		reqTime := strconv.FormatInt(now.Unix(), 10)
		q.Set("RequestTime", reqTime)
		q.Set("Sign", auth.HashSecret(tencentToken+reqTime)) // hex(SHA-256(token + RequestTime))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
