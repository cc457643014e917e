# Redraw: cd bench && gnuplot results.gp
set terminal pngcairo size 1600,760 font 'Sans,12'
set output 'results.png'
set multiplot layout 1,2 title "berth vs QEMU 7.2.22 (medians of 10 runs; log scale)\n6.18.44-fc-v1045 | 2 CPUs | PVM: yes | 2026-12-03T18:15:13Z" font ',13'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set format y '%.0s%c'
set grid ytics
set key top left
set xtics rotate by 25 right scale 0 nomirror
set bmargin 7
set lmargin 10
set title 'lower is better (ms, MiB)'
set yrange [0.1:100000]
set xrange [-0.6:15.6]
plot 'results.dat' index 0 using 2:xtic(1) title 'berth' lc rgb '#1f77b4', \
  'results.dat' index 0 using 3 title 'QEMU' lc rgb '#d62728', \
  'results.dat' index 0 using ($0-1.0/6):2:($2 < 1000 ? sprintf('%.3g', $2) : $2 < 10000 ? sprintf('%.0f', $2) : sprintf('%.0fk', $2 / 1000)) with labels offset 0,0.8 font ',10' notitle, \
  'results.dat' index 0 using ($0+1.0/6):3:($3 < 1000 ? sprintf('%.3g', $3) : $3 < 10000 ? sprintf('%.0f', $3) : sprintf('%.0fk', $3 / 1000)) with labels offset 0,0.8 font ',10' notitle
set title 'higher is better (per second)'
set yrange [1:1000000]
set xrange [-0.6:8.6]
plot 'results.dat' index 1 using 2:xtic(1) title 'berth' lc rgb '#1f77b4', \
  'results.dat' index 1 using 3 title 'QEMU' lc rgb '#d62728', \
  'results.dat' index 1 using ($0-1.0/6):2:($2 < 1000 ? sprintf('%.3g', $2) : $2 < 10000 ? sprintf('%.0f', $2) : sprintf('%.0fk', $2 / 1000)) with labels offset 0,0.8 font ',10' notitle, \
  'results.dat' index 1 using ($0+1.0/6):3:($3 < 1000 ? sprintf('%.3g', $3) : $3 < 10000 ? sprintf('%.0f', $3) : sprintf('%.0fk', $3 / 1000)) with labels offset 0,0.8 font ',10' notitle
unset multiplot
