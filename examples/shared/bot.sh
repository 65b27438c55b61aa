#!/usr/bin/env bash
# A chat bot for one shared process:
#
#   wspipe --port 8080 --shared --shared-ids examples/shared/bot.sh
#
# It reads "ID<TAB>text" for each client message and "join<TAB>ID" /
# "leave<TAB>ID" as clients come and go (see docs/channels.md). It greets
# each newcomer alone, tells everyone who joined and left, and answers each
# message to its sender alone, except:
#   say TEXT          everyone gets "ID says: TEXT"
#   to OTHER TEXT     client OTHER alone gets "ID whispers: TEXT"
# A line it writes as "ID<TAB>text" goes to client ID only; a line with no
# TAB goes to every client.
while IFS=$'\t' read -r id text; do
  case $id in
    join)
      printf '%s\twelcome, client %s\n' "$text" "$text"
      printf '* %s joined\n' "$text" ;;
    leave)
      printf '* %s left\n' "$text" ;;
    *)
      case $text in
        "say "*) printf '%s says: %s\n' "$id" "${text#say }" ;;
        "to "*" "*)
          rest=${text#to }
          printf '%s\t%s whispers: %s\n' "${rest%% *}" "$id" "${rest#* }" ;;
        *) printf '%s\tyou (%s) said: %s\n' "$id" "$id" "$text" ;;
      esac ;;
  esac
done
