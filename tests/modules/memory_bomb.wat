;; Hostile: grows memory one page at a time until refused, then aborts (like Rust's OOM).
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
