// Wrapper module that builds AWS's official session-manager-plugin (release 1.2.677.0)
// from the Go module proxy, as an interop and benchmark peer for nodeshell's SSM client.
// The upstream repository has no go.mod, so its old dependencies are pinned here.
module nodeshell.dev/e2e/ssmplugin

go 1.26.0

require (
	github.com/aws/aws-sdk-go v1.54.10 // indirect
	github.com/aws/session-manager-plugin v0.0.0-20241010233726-61cf1288c7c6 // indirect
	github.com/cihub/seelog v0.0.0-20170130134532-f561c5e57575 // indirect
	github.com/eiannone/keyboard v0.0.0-20220611211555-0d226195f203 // indirect
	github.com/fsnotify/fsnotify v1.10.1 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/jmespath/go-jmespath v0.4.0 // indirect
	github.com/stretchr/objx v0.5.3 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/twinj/uuid v0.0.0-20151029044442-89173bcdda19 // indirect
	github.com/xtaci/smux v1.5.58 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.47.0 // indirect
)

tool github.com/aws/session-manager-plugin/src/sessionmanagerplugin-main
