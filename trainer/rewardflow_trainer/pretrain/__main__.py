from rewardflow_trainer.pretrain.cli import main

raise SystemExit(main())
