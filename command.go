package whatsappmedia

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "whatsapp-media",
		Usage: "hash-token [--plaintext <token>]",
		Short: "Helpers for the whatsapp_media handler",
		Long: `
hash-token prints the hex SHA-256 of an API token, the value of a static
account's token_sha256, so that configs need not hold the token itself. The
token is read from --plaintext or, without it, from the first line of
standard input (prefer stdin: command lines end up in shell histories).`,
		CobraFunc: func(cmd *cobra.Command) {
			hash := &cobra.Command{
				Use:   "hash-token [--plaintext <token>]",
				Short: "Prints the token_sha256 value of an API token",
				RunE: func(cmd *cobra.Command, _ []string) error {
					token, _ := cmd.Flags().GetString("plaintext")
					if token == "" {
						line, err := bufio.NewReader(os.Stdin).ReadString('\n')
						if err != nil && line == "" {
							return errors.New("no token: give --plaintext or a line on standard input")
						}
						token = strings.TrimRight(line, "\r\n")
					}
					if token == "" {
						return errors.New("the token is empty")
					}
					_, err := fmt.Fprintln(cmd.OutOrStdout(), hashToken(token))
					return err
				},
			}
			hash.Flags().String("plaintext", "", "The API token to hash (default: read from standard input)")
			cmd.AddCommand(hash)
		},
	})
}
