;; Hostile: answers 32,000 nested arrays ("[[[...]]]", 64,000 bytes: within the default
;; output budget), deeper than any JSON decoder's recursion limit.
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (memory.fill (i32.const 0) (i32.const 91) (i32.const 32000))      ;; '['
    (memory.fill (i32.const 32000) (i32.const 93) (i32.const 32000))  ;; ']'
    (i64.const 64000)))
