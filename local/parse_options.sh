#!/usr/bin/env bash
# The command-line options of a recipe, Kaldi style. A script declares its options as variables,
# one per line at the start of the line, each with an optional short comment, and then sources
# this file:
#
#   stage=0
#   nj=16            # parallel feature-extraction jobs
#   . local/parse_options.sh
#
# The options are exactly the variables assigned that way above the line that sources this file
# (read from the script's own text, so there is no second list to keep in step). `--help` lists
# them with their values and comments. `--name value` or `--name=value` sets one, with dashes or
# underscores (--stop-stage = --stop_stage); any other name is refused, and so is a non-integer for
# an option whose default is an integer. A value is assigned as text, never evaluated, and the
# option name typed is only compared with the declared names, never expanded. Unlike Kaldi's
# parse_options.sh there is no `--config FILE` sourced as shell code (so that no recipe names a
# file variable `config`): configuration files are TOML and are passed to sertool with `--conf`.
# What remains after the options is left in "$@" as positional arguments.

_opt_script=${BASH_SOURCE[1]:-}
# A recipe first changes into its own folder, where the relative path it was started by may no
# longer lead to it; its name does.
[ -r "$_opt_script" ] || _opt_script=${_opt_script##*/}
if [ ! -r "$_opt_script" ]; then
  echo "$0: parse_options.sh: cannot read the script that sources it (${BASH_SOURCE[1]:-none})" >&2
  exit 1
fi

# _opt_fail MESSAGE: the one line a refused command line gets.
_opt_fail() {
  echo "$0: $*" >&2
  exit 1
}

# The declared options, in order: their names, comments and whether their default is an integer.
_opt_names=() _opt_comments=() _opt_integer=()
_opt_integer_re='^-?[0-9]+$'
_opt_decl_re='^([A-Za-z_][A-Za-z0-9_]*)='
# name=value # comment, the value "...", '...' or one unquoted word
_opt_value_re='("[^"]*"|'\''[^'\'']*'\''|[^[:space:]]*)'
_opt_comment_re="^[A-Za-z0-9_]+=${_opt_value_re}[[:space:]]*#[[:space:]]*(.*)$"
_opt_continued_re='^[[:space:]]+#[[:space:]]*(.*)$'  # an indented comment line goes on
_opt_line=0 _opt_last=-1
while IFS= read -r _opt_text && [ $((++_opt_line)) -lt "${BASH_LINENO[0]}" ]; do
  if [[ $_opt_text =~ $_opt_decl_re ]]; then
    _opt_last=${#_opt_names[@]}
    _opt_names+=("${BASH_REMATCH[1]}")
    if [[ ${!BASH_REMATCH[1]-} =~ $_opt_integer_re ]]; then
      _opt_integer+=(1)
    else
      _opt_integer+=("")
    fi
    if [[ $_opt_text =~ $_opt_comment_re ]]; then
      _opt_comments+=("${BASH_REMATCH[2]}")
    else
      _opt_comments+=("")
    fi
  elif [ "$_opt_last" -ge 0 ] && [[ $_opt_text =~ $_opt_continued_re ]]; then
    _opt_comments[_opt_last]+="${_opt_comments[_opt_last]:+ }${BASH_REMATCH[1]}"
  else
    _opt_last=-1
  fi
done < "$_opt_script"

# _opt_index NAME: the position of option NAME (underscores) in _opt_names, or false.
_opt_index() {
  local i
  for i in "${!_opt_names[@]}"; do
    if [ "${_opt_names[i]}" = "$1" ]; then echo "$i"; return 0; fi
  done
  return 1
}

# _opt_word VALUE: VALUE as one shell word, so that a line of --help can be pasted back.
_opt_word() {
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_./:,=+@%-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

_opt_usage() {
  local i line
  echo "usage: $0 [--option value ...]" >&2
  echo "options (defaults, or as set by the options before --help):" >&2
  for i in "${!_opt_names[@]}"; do
    line="--${_opt_names[i]//_/-} $(_opt_word "${!_opt_names[i]}")"
    if [ -n "${_opt_comments[i]}" ]; then
      printf '  %-40s # %s\n' "$line" "${_opt_comments[i]}" >&2
    else
      printf '  %s\n' "$line" >&2
    fi
  done
}

_positional=()
while [ $# -gt 0 ]; do
  case $1 in
    --help|-h) _opt_usage; exit 0 ;;
    --*=*) _opt=${1%%=*}; _val=${1#*=}; shift ;;
    --*)
      _opt=$1
      [ $# -ge 2 ] || _opt_fail "option $_opt needs a value"
      _val=$2; shift 2 ;;
    *) _positional+=("$1"); shift; continue ;;
  esac
  _name=${_opt#--}; _name=${_name//-/_}
  if ! _i=$(_opt_index "$_name"); then
    _known=$(printf -- '--%s, ' "${_opt_names[@]//_/-}")
    _opt_fail "unknown option $_opt (known: ${_known%, })"
  fi
  if [ -n "${_opt_integer[_i]}" ] && ! [[ $_val =~ $_opt_integer_re ]]; then
    _opt_fail "option $_opt needs an integer, not '$_val'"
  fi
  printf -v "$_name" '%s' "$_val"
done
set -- "${_positional[@]+"${_positional[@]}"}"
unset _opt_script _opt_names _opt_comments _opt_integer _opt_integer_re _opt_decl_re \
  _opt_value_re _opt_comment_re _opt_continued_re _opt_line _opt_last _opt_text _opt _val _name \
  _i _known _positional
unset -f _opt_fail _opt_index _opt_word _opt_usage
